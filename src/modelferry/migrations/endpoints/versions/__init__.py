"""The revisions of the local endpoint state's schema, linked by `down_revision`."""
