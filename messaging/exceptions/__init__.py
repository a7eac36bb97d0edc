"""Exceptions: failures turned into work for someone, created where the failure happens.

Each one has a category (technical, market operations, data quality, awaiting a dependency), a
severity, the owner queue it lands in and whose it is to act (the client, Busbar's provider
support, or the DIP or another market party). Awaiting-dependency ones name their dependency
(``dependency_key``) and are retried automatically when it arrives.
"""
