"""The in-process agent runtime: one task per room, owned by a supervisor."""
