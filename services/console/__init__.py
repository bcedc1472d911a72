"""The console service.

The people's side of servicedesk: an HTTP API for agent desks (tickets, queues, agents, commands
sent in the caller's own name), a live operator dashboard, and the customers' survey page. It
reads the public topics into read models of its own and changes nothing but through dispatch.
"""
