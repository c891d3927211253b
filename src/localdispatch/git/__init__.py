"""Git for the dispatcher: the command runner, private clones, task branches."""
