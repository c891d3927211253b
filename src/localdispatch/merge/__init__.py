"""The merge queue: integration tree, gates, pending merges, the user's checkout."""
