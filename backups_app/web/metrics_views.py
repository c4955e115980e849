"""GET /metrics: Prometheus text for a scraper holding STANZA_METRICS_TOKEN, or a staff user."""

import hmac
import logging

from django.http import Http404, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from backups_app import conf
from backups_app.health import metrics

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def metrics_view(request):
    """404 while STANZA_METRICS_TOKEN is unset; 401 without its Bearer token or a staff login."""
    token = conf.get("STANZA_METRICS_TOKEN")
    if not token:
        raise Http404("metrics are off")
    if not (bearer_matches(request, token) or is_staff(request.user)):
        response = HttpResponse(
            "metrics need Authorization: Bearer and the STANZA_METRICS_TOKEN\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        body = metrics.exposition()
    except Exception:  # the scrape fails (Prometheus marks it down); the log says why
        logger.exception("metrics could not be gathered")
        return HttpResponse(
            "metrics could not be gathered: see the site's log\n",
            status=500,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def bearer_matches(request, token):
    """Whether the request carries `Authorization: Bearer TOKEN`, compared in constant time."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def is_staff(user):
    return user.is_authenticated and user.is_active and user.is_staff
