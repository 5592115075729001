"""`make_provider(settings)`: the one place that picks a provider from the configuration."""

from __future__ import annotations

from cloud.base import AuthFailed, Provider
from cloud.local import LocalProvider
from cloud.retry import RetryPolicy
from config.settings import OrchestratorSettings, ProviderKind

__all__ = ["make_provider"]


def make_provider(settings: OrchestratorSettings) -> Provider:
    """A fresh provider for this process. Cheap: build one per process, never share across them."""
    provider = settings.provider
    if provider.kind is ProviderKind.LOCAL:
        return LocalProvider(
            settings.state_dir,
            boot_delay_s=provider.local_boot_delay_s,
            handler=provider.local_worker_handler,
        )
    if provider.kind is ProviderKind.RUNPOD:
        from cloud.runpod import RunPodProvider  # the SDK is imported only when used

        if provider.runpod_api_key is None:
            raise AuthFailed("provider.kind is runpod but no API key is set (RUNPOD_API_KEY)")
        return RunPodProvider(
            provider.runpod_api_key.get_secret_value(),
            base_url=provider.runpod_api_base_url,
            retry=RetryPolicy(
                max_attempts=provider.request_max_attempts,
                max_seconds=provider.request_max_seconds,
            ),
        )
    raise ValueError(f"unknown provider kind {provider.kind!r}")
