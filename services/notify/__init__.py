"""The notify service. Acknowledgements and notices by email, webhook and SMS, each sent once."""
