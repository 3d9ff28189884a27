"""Action requests that wait for people (two-person rule).

Built in the approvals wave; see docs/architecture.md.
"""
