"""State behind one interface: in memory now, Redis when several processes share it."""
