"""The dispatch service.

Classification matrix, routing to groups and agents, the ticket lifecycle.
"""
