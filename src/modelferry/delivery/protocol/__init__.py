"""The edge delivery wire protocol as modelferry implements it (docs/protocol.md).

`messages` builds and parses the messages (properties and JSON body of each kind),
`body` reads a device-supplied body within bounds, and `states` names the states a
delivery can be in, the devices' and the cloud's own.
"""
