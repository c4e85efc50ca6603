"""Test doubles and contract suites for your own tests, as `structlog.testing` is for structlog.

Nothing in the rest of modelferry imports this package (a lint rule keeps it so); it is
for tests: modelferry's own and yours.

- `modelferry.testing.azureml`: `FakeMLClient` (an Azure ML workspace in memory, in place
  of `azure.ai.ml.MLClient`) and `FakeMetricsQueryClient` (Azure Monitor's endpoint
  metrics, in place of `azure.monitor.query.MetricsQueryClient`). Pass them where the
  real clients go, e.g. `AzureMLEndpointBackend(FakeMLClient(tmp_path), registry)`.
- `modelferry.testing.iothub`: `FakeIoTHub`, an IoT hub in memory with the two Azure SDK
  clients `IoTHubChannel` uses and MQTT-style device transports.
- `modelferry.testing.mosquitto`: `Mosquitto`, a private Mosquitto broker on a free port
  (needs the `mosquitto` executable).
- `modelferry.testing.contracts`: the contract suites every `DeliveryChannel` and
  `DeviceTransport`, `EndpointBackend` and `PackageStore` passes; subclass one to check a
  backend of your own (needs pytest).

The Azure doubles need the `azure` extra (`pip install 'modelferry[azure]'`), as the
backends they stand in for do. There is no emulator for IoT Hub or Azure ML, so these
doubles follow the SDKs' signatures (modelferry's tests compare them with
`inspect.signature`) and refuse what the services refuse.
"""
