"""The revisions of the delivery records' schema, linked by `down_revision`."""
