"""Projects, content containers and social accounts, always scoped to one organization."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from shared.kit import ids
from shared.kit.errors import NotFound
from shared.models import (
    ContainerStatus,
    ContentContainer,
    Project,
    SocialAccount,
)

_VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm")


Owned = TypeVar("Owned", Project, ContentContainer)


def get_owned(
    session: Session, model: type[Owned], prefix: str, organization_id: str, object_id: str
) -> Owned:
    """The object in this organization, or NotFound: a foreign id, a malformed one and a
    missing one all look the same."""
    if ids.is_valid(object_id, prefix):
        found = session.get(model, object_id)
        if found is not None and found.organization_id == organization_id:
            return found
    raise NotFound(f"{_NAMES[model]} not found")


_NAMES: dict[type[Any], str] = {
    Project: "Project",
    ContentContainer: "Content container",
}


def get_project(session: Session, organization_id: str, project_id: str) -> Project:
    """The project in this organization, or NotFound."""
    return get_owned(session, Project, ids.PROJECT, organization_id, project_id)


def get_container(session: Session, organization_id: str, container_id: str) -> ContentContainer:
    """The content container in this organization, or NotFound."""
    return get_owned(session, ContentContainer, ids.CONTAINER, organization_id, container_id)


def lock_container(
    session: Session, organization_id: str, container_id: str, *, share: bool = False
) -> ContentContainer:
    """The container under its row lock until commit (shared with `share`: a schedule reads
    its approval state; a decision takes it for update), or NotFound."""
    if ids.is_valid(container_id, ids.CONTAINER):
        found = session.scalars(
            select(ContentContainer)
            .where(
                ContentContainer.id == container_id,
                ContentContainer.organization_id == organization_id,
            )
            .with_for_update(read=share)
            .execution_options(populate_existing=True)
        ).one_or_none()
        if found is not None:
            return found
    raise NotFound("Content container not found")


def awaits_approval(session: Session, project: Project) -> bool:
    """Whether a container made now in this project starts `pending_approval`: always under
    `requiresApproval`, else while the project holds fewer than `firstNPostsBlocked`
    containers. Two uploads at once may both count the same N-1: both then wait, one more
    than the policy asks, never one fewer."""
    if project.approval_required:
        return True
    if project.approval_first_n == 0:
        return False
    made = session.scalar(select(func.count()).where(ContentContainer.project_id == project.id))
    return (made or 0) < project.approval_first_n


def media_type(url: str, declared: str | None) -> str:
    """The declared media type, else a guess from the URL's suffix."""
    if declared:
        return declared
    path = urlsplit(url).path.lower()  # neither `?query` nor `#fragment` hides the suffix
    return "video" if path.endswith(_VIDEO_SUFFIXES) else "image"


def create_container(
    session: Session,
    project: Project,
    caption: str,
    media: list[tuple[str, str | None]],
    *,
    now: datetime,
) -> ContentContainer:
    """Store caption and media references as a container: `completed`, or
    `pending_approval` under the project's approval policy."""
    gated = awaits_approval(session, project)
    container = ContentContainer(
        id=ids.new_id(ids.CONTAINER),
        organization_id=project.organization_id,
        project_id=project.id,
        status=(ContainerStatus.PENDING_APPROVAL if gated else ContainerStatus.COMPLETED).value,
        approval_required=gated,
        caption=caption,
        media=[{"url": url, "type": media_type(url, kind)} for url, kind in media],
        created_at=now,
    )
    session.add(container)
    session.flush()
    return container


# Built once: every publish reads them, in its claim's transaction.
_PAYLOAD_SOURCE: Final = (
    select(SocialAccount, ContentContainer.caption, ContentContainer.media)
    .join(ContentContainer, ContentContainer.id == bindparam("container_id"))
    .where(SocialAccount.id == bindparam("account_id"))
)


def payload_source(
    session: Session, account_id: str, container_id: str
) -> tuple[SocialAccount, dict[str, Any]]:
    """A post's account, and the container fields a platform upload needs: one query."""
    row = session.execute(
        _PAYLOAD_SOURCE, {"account_id": account_id, "container_id": container_id}
    ).one_or_none()
    if row is None:
        raise NotFound("Content container not found")
    account, caption, media = row
    return account, {"caption": caption, "media": media}
