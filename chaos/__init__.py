"""`publisher chaos`: load, faults, a recorded history and a checker of the invariants of
docs/design.md."""
