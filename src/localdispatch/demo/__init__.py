"""`localdispatch demo`: the whole cycle in a throwaway repository."""
