"""The exception queue's table (imported by ``messaging.models`` so Django finds it)."""

from __future__ import annotations

from django.db import models

from tenants.models import Connection, Membership, TenantOwned


class Category(models.TextChoices):
    TECHNICAL = "technical", "Technical"
    MARKET_OPERATIONS = "market_operations", "Market operations"
    DATA_QUALITY = "data_quality", "Data quality"
    AWAITING_DEPENDENCY = "awaiting_dependency", "Awaiting dependency"


class Severity(models.TextChoices):
    FATAL = "fatal", "Fatal"
    ERROR = "error", "Error"
    WARNING = "warning", "Warning"
    INFO = "info", "Info"


class Actor(models.TextChoices):
    """Whose it is to act."""

    CLIENT = "client", "The client"
    PROVIDER = "provider", "Busbar's provider support"
    MARKET_PARTY = "market_party", "The DIP or another market party"


class ExceptionState(models.TextChoices):
    OPEN = "open", "Open"
    RETRYING = "retrying", "Retrying"
    RESOLVED = "resolved", "Resolved"


class ResolutionCode(models.TextChoices):
    """How an exception was closed: a fixed list, so the queue's history can be counted."""

    CORRECTED_AND_REPROCESSED = "corrected_reprocessed", "Corrected and reprocessed"
    RESENT_BY_SENDER = "resent_by_sender", "Sender sent a corrected message"
    REPLAYED = "replayed", "Replayed"
    RAISED_WITH_MARKET_PARTY = "raised_with_party", "Raised with the DIP or market party"
    ACCEPTED_AS_IS = "accepted_as_is", "Accepted as is (no action needed)"
    DUPLICATE = "duplicate", "Duplicate of another exception"
    WITHDRAWN = "withdrawn", "Message withdrawn or superseded"
    AUTOMATIC = "automatic", "Resolved automatically (the message later succeeded)"


class HandlingAction(models.TextChoices):
    ASSIGNED = "assigned", "Assigned"
    COMMENTED = "commented", "Commented"
    RESOLVED = "resolved", "Resolved"
    REPROCESSED = "reprocessed", "Reprocessed"


class MessageException(TenantOwned):
    """One failure of one message (or of a delivery, when no message could be told apart).

    ``message_id``/``raw_id`` point into the message store's partitioned tables by id (no
    foreign key: a key into a partitioned table must carry its partition column). One open
    exception per (message, code): the same failure seen twice updates ``occurrences``.
    """

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(
        Connection, null=True, on_delete=models.PROTECT, related_name="+"
    )
    message_id = models.BigIntegerField(null=True, blank=True)
    raw_id = models.BigIntegerField(null=True, blank=True)
    direction = models.CharField(max_length=3, default="in")
    interface_id = models.CharField(max_length=8, blank=True)
    transaction_id = models.CharField(max_length=65, blank=True)
    category = models.CharField(max_length=20, choices=Category.choices)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    owner_queue = models.CharField(max_length=40)
    to_act = models.CharField(max_length=12, choices=Actor.choices)
    code = models.CharField(max_length=40)
    title = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True)
    dependency_key = models.CharField(max_length=200, blank=True)
    state = models.CharField(
        max_length=10, choices=ExceptionState.choices, default=ExceptionState.OPEN
    )
    occurrences = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=300, blank=True)
    resolution_code = models.CharField(max_length=24, choices=ResolutionCode.choices, blank=True)
    # When it should be resolved by (``messaging.exceptions.sla``), set when it is raised.
    sla_due_at = models.DateTimeField(null=True, blank=True)
    assignee = models.ForeignKey(
        Membership, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "messaging_exception"
        indexes = [
            models.Index(
                fields=["tenant", "state", "owner_queue", "created_at"], name="exception_queue"
            ),
            models.Index(fields=["tenant", "message_id"], name="exception_message"),
            models.Index(
                fields=["tenant", "dependency_key"],
                name="exception_dependency",
                condition=models.Q(category="awaiting_dependency", state="open"),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "message_id", "code"],
                condition=models.Q(state="open"),
                name="exception_one_open_per_code",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.title}"


class ExceptionHandling(TenantOwned):
    """One step of a person handling an exception (assignment, comment, resolution, reprocess):
    its history, kept for evidence. Append-only by use; the audit log carries the same step."""

    id = models.BigAutoField(primary_key=True)
    exception = models.ForeignKey(MessageException, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=12, choices=HandlingAction.choices)
    actor = models.CharField(max_length=150)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    text = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "messaging_exception_handling"
        indexes = [models.Index(fields=["tenant", "exception", "at"], name="exception_handling")]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor}"
