"""An exporter wrapper shared by the test clients: every export that does not succeed is recorded."""

failures = []


class Checked:
    """Wraps an exporter and records every non-success result in `failures`."""

    def __init__(self, inner, signal):
        self.inner, self.signal = inner, signal

    def export(self, batch, *args, **kw):
        result = self.inner.export(batch, *args, **kw)
        if result.name != "SUCCESS":
            failures.append(f"{self.signal}: {result}")
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)
