import logging

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from backups_app.health import health

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request):
    """For monitoring: 200 when backups are healthy, 503 with the problems named otherwise."""
    try:
        problems = health.problems()
    except Exception:
        logger.exception("health check failed")
        problems = ["health check error"]
    if problems:
        return JsonResponse({"status": "failing", "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})
