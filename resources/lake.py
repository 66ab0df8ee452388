"""The offline lake: one parquet file per asset under a per-tenant prefix."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # pyarrow loads in the steps, not with the code location
    import pyarrow as pa


class LakeResource(dg.ConfigurableResource):
    """Parquet storage; every tenant writes under `<root>/<tenant>/` and nowhere else."""

    root: str

    def path(self, tenant: str, kind: str, name: str) -> Path:
        return Path(self.root) / tenant / kind / f"{name}.parquet"

    def write(self, tenant: str, kind: str, name: str, table: pa.Table) -> Path:
        """Write atomically: readers see the old file or the new one, never half of one."""
        from platform_assets.tenancy.isolation import check_write

        target = self.path(tenant, kind, name)
        check_write(Path(self.root), tenant, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def read(self, tenant: str, kind: str, name: str) -> pa.Table:
        path = self.path(tenant, kind, name)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: materialize {tenant}/{kind}/{name} first"
            )
        import pyarrow.parquet as pq

        return pq.read_table(path)
