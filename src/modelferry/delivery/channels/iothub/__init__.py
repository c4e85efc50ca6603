"""Delivery over Azure IoT Hub: the Azure SDKs on the cloud side, MQTT on the device side.

`channel` holds `IoTHubChannel` and `IoTHubDeviceTransport`, `auth` connection strings
and SAS tokens, and `sdk` the parts of the Azure SDKs the channel calls (an optional
extra, imported when first used). `modelferry.testing.iothub` is a hub in memory for tests.
"""
