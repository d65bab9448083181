"""The fit of the device's cell model to traces, step by step (see bms_host.fit, the
command): options, dataset, ocv, pulses, problem and refine (the least squares), thermal,
validation, writer and report; pipeline runs them in order."""
