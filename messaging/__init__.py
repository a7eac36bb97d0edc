"""The message life: the DIP protocol boundary (``messaging.dip``) and, around it, inbound and
outbound processing, validation, exceptions, replay, reconciliation and evidence."""
