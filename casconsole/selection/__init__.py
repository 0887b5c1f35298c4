"""The selection: the five steps, the dependency check and closure, the plan."""
