from django.urls import include, path

from zentestapp import views

api = [path("customers/<int:n>/", views.queries)]

urlpatterns = [
    path("queries/<int:n>/", views.queries),
    path("timed/", views.timed),
    path("immediate/", views.immediate),
    path("enqueue/<str:queue>/", views.enqueue),
    path("cached/<str:alias>/", views.cached),
    path("downstream/<int:n>", views.queries),  # no slash: what views.external calls
    path("mixed/", views.mixed),
    path("orm/", views.orm),
    path("async/<int:n>/", views.async_queries),
    path("grow/<int:mib>/", views.grow),
    path("eager/<int:n>/", views.eager),
    path("raw/", views.raw),
    path("violation/", views.violation),
    path("external/<str:library>/<str:path>/", views.external),
    path("boom/", views.boom),
    path("pause-in-database/", views.pause_in_database),
    path("secrets/", views.secrets),
    path("raw-literal/<int:i>/", views.raw_literal),
    path("debug/shape-caches/", views.shape_caches),
    path("secrets/error/", views.secret_error),
    path("cbv/", views.ClassBased.as_view()),
    path("nplusone/", views.n_plus_one),
    path("template-nplusone/", views.template_n_plus_one),
    path("template-method-nplusone/", views.template_method_n_plus_one),
    path("slow/", views.slow),
    path("mongo-nplusone/", views.mongo_n_plus_one),
    path("decorated/<int:n>/", views.decorated),
    path("decorated-class/", views.DecoratedClass.as_view()),
    path("stream/<int:before>/<int:during>/", views.stream),
    path("astream/<int:before>/<int:during>/", views.astream),
    path("stream-fails/", views.stream_fails),
    path("file/<int:kib>/", views.file),
    path("fanout/<int:n>/", views.fanout),
    path("threads/<int:n>/", views.threads),
    path("async-fanout/<int:n>/", views.async_fanout),
    path("api/v1/", include(api)),
    path("count/", include("zencountapp.urls")),
]
