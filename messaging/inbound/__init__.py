"""Inbound: the DIP's pushes to Busbar. ``registration`` tells the DIP where to push, ``receive``
verifies and stores a push in one transaction, ``asgi`` is the lean server in front of it, and
``processing`` moves stored messages through validation after commit."""
