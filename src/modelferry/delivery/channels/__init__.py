"""The transports that carry delivery messages between the cloud and devices.

`base` holds the two interfaces and their contract (`DeliveryChannel`, the cloud side;
`DeviceTransport`, a device's side); `local` is the in-process hub of the embedded
default, `mqtt` IoT Hub-style topics on a self-hosted broker, `iothub` Azure IoT Hub.
"""
