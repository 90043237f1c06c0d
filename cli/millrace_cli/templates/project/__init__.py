"""A Millrace feature module of your own (written by ``millrace init``)."""
