"""The reference shop: four services (orders, payments, inventory, shipping) run by `seawall demo`.

``seawall.shop.logic`` holds the pure business logic (shared with the simulator); the
other modules run it as real processes over HTTP and durable queues. See ``docs/shop.md``.
"""

from __future__ import annotations

__all__: list[str] = []
