"""The pipeline's Redis operations as fast as the server answers (users/redis.py).

locust -f locustfiles/redis_bench.py --headless -u 10 -r 10 -t 30s --redis-url redis://127.0.0.1:6379/0
python -m bench redis        # this and redis-benchmark against the same server
"""

from __future__ import annotations

from users.redis import RedisUser


class RedisOps(RedisUser):
    pass
