"""``configure_model`` for every mplus LightningModule: FSDP2 sharding when the strategy asks.

Lightning calls ``configure_model`` once the process group and device mesh exist, before the
optimisers are built, so parameters are sharded before anything allocates optimiser state.
"""

from __future__ import annotations

from mplus.distributed import shard_model


class ShardedModule:
    """Mixin: set ``shard_with`` to the hardware option to shard under ``strategy=fsdp``.

    Subclasses list their models in :meth:`models_to_shard` as ``(model, trainable)`` pairs.
    """

    shard_with = None  # the hardware config (strategy fsdp) or None

    def models_to_shard(self) -> list:
        raise NotImplementedError

    def drop_frozen(self, checkpoint: dict, prefixes: tuple[str, ...]) -> None:
        """Leave frozen models out of a one-file checkpoint (they are rebuilt from their paths).

        A sharded (distributed) checkpoint keeps them: its loader restores every key the module
        has. Their bf16 shards add ~12% to a PPO checkpoint of fp32 weights + Adam states.
        """
        if self.shard_with is not None:
            return
        sd = checkpoint["state_dict"]
        for k in [k for k in sd if k.startswith(prefixes)]:
            del sd[k]

    def configure_model(self) -> None:
        hw = self.shard_with
        if hw is None:
            return
        for model, trainable in self.models_to_shard():
            if model is not None:
                shard_model(
                    model,
                    self.device_mesh["data_parallel"],
                    hw.fsdp,
                    precision=hw.precision,
                    trainable=trainable,
                    device=self.trainer.strategy.root_device,
                )
