"""dipsim: a faithful simulator of the MHHS Data Integration Platform (DIP), run as its own process.

It imports nothing from the rest of Busbar: it is the other party, and sharing code with the
client would hide bugs on both sides. See dipsim/README.md.
"""
