"""Pod providers: where worker pods come from (RunPod through its SDK, or local processes).

The contract is in `cloud.base`; `cloud.factory.make_provider(settings)` picks one;
`cloud.spec.pod_spec_for_worker(...)` builds the spec and env a worker pod receives.
"""

__all__ = ["base", "factory", "local", "runpod", "spec"]
