"""Routes of the dashboard, mounted at the site root."""

from django.urls import path, re_path

from batches.dashboard import views, webhooks

app_name = "dashboard"

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ACTIONS = "|".join(views.BATCH_ACTIONS)
DOWNLOADS = r"items\.jsonl|items\.csv|errors\.csv|package\.zip"

urlpatterns = [
    path("", views.home, name="home"),
    path("_/overview/", views.overview_panel, name="overview-panel"),
    path("_/batch-rows/", views.batch_rows, name="batch-rows"),
    path("batches/<uuid:pk>/", views.batch_detail, name="batch-detail"),
    path("batches/<uuid:pk>/_header/", views.batch_header, name="batch-header"),
    path("batches/<uuid:pk>/items/<int:index>/", views.item_detail, name="item-detail"),
    path("batches/<uuid:pk>/change/", views.batch_change, name="batch-change"),
    re_path(
        rf"^batches/(?P<pk>{UUID})/(?P<action>{ACTIONS})/$",
        views.batch_action,
        name="batch-action",
    ),
    re_path(
        rf"^batches/(?P<pk>{UUID})/download/(?P<name>{DOWNLOADS})$",
        views.batch_download,
        name="batch-download",
    ),
    path(
        "batches/<uuid:pk>/deliveries/<uuid:delivery_id>/redeliver/",
        webhooks.delivery_redeliver,
        name="delivery-redeliver",
    ),
    path("accounts/", views.accounts, name="accounts"),
    path("accounts/new/", views.account_create, name="account-create"),
    path("accounts/<int:number>/keys/new/", views.api_key_create, name="api-key-create"),
    path("keys/<str:prefix>/revoke/", views.api_key_revoke, name="api-key-revoke"),
    path(
        "accounts/<int:number>/webhook-secret/",
        webhooks.webhook_secret_rotate,
        name="webhook-secret-rotate",
    ),
]
