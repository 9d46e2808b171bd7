"""Delivery channels and projections, each a consumer group on the event stream."""
