"""Reconciliation as routine control: scheduled checks whose every run is kept as evidence."""
