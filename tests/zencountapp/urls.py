from django.contrib import admin
from django.urls import path

from zencountapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("products/<int:shop>/", views.products),
    path("block/<str:name>/", views.block),
    path("raw-async/<int:n>/", views.raw_async),
]
