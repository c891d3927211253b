"""Splitting a goal into tasks: the model client, the repository context, the plan."""
