"""The portal's pages for people: dashboard, agents, grants and "my agents"."""
