"""Delivery over MQTT with IoT Hub's topic dialect, on Mosquitto or any MQTT 3.1.1 broker.

`channel` holds the cloud channel and the device transport (`MqttChannel`,
`MqttDeviceTransport`), `client` the paho client they share (connect, reconnect,
publish with acknowledgement), `loop` paho's network loop on a thread of its own, and
`topics` the topic names and property bags.
"""
