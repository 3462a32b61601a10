"""`publisher chaos`: load, faults, a recorded history and a checker of DESIGN.md's invariants."""
