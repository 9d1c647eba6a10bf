"""Payments: a server-owned catalog, PortOne V2 prepare/complete/webhook, credited exactly once."""
