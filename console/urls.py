from __future__ import annotations

from django.urls import path

from console.views import auth, home

app_name = "console"

urlpatterns = [
    path("", home.home, name="home"),
    path("login/", auth.login_view, name="login"),
    path("logout/", auth.logout_view, name="logout"),
    path("tenant/switch/", auth.switch_tenant, name="tenant-switch"),
    path("flows/", home.area, {"area": "flows"}, name="flows"),
    path("messages/", home.area, {"area": "messages"}, name="messages"),
    path("exceptions/", home.area, {"area": "exceptions"}, name="exceptions"),
    path("certificates/", home.area, {"area": "certificates"}, name="certificates"),
    path("evidence/", home.area, {"area": "evidence"}, name="evidence"),
    path("settings/", home.settings_page, name="settings"),
]
