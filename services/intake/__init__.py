"""The intake service.

Requests from every channel in; numbered, recorded and triaged tickets out.
"""
