"""The delivery record store: every delivery, every state it went through, what is installed.

`store` holds `DeliveryRecords` and the records it reads, `schema` its tables and
engine, and `writer` the writes for async code (`AsyncDeliveryRecords`).
"""
