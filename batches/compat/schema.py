"""Each dialect's own OpenAPI document, at /compat/<name>/schema/.

A dialect keeps its source API's paths and error shapes, so a client for it has nothing to
do with the native API: its operations live in a document of their own, and the native
schema (/api/v1/schema/) has none of them. `manage.py spectacular --generator-class
batches.compat.schema.<Name>SchemaGenerator` writes one to a file.
"""

from __future__ import annotations

from django.urls import URLPattern, path
from drf_spectacular.views import SpectacularAPIView

from batches.api.renderers import SchemaNegotiation
from batches.api.schema import DocumentGenerator


def dialect_schema_generator(name: str, source: str) -> type[DocumentGenerator]:
    """Return the generator of the document of dialect `name`, a translation of `source`."""
    return type(
        f"{name.title()}SchemaGenerator",
        (DocumentGenerator,),
        {
            "__doc__": f"Generate the schema document of the {source} dialect.",
            "__module__": __name__,
            "prefix": f"/compat/{name}/",
            "document_title": f"batchsite: {source} dialect",
            "document_description": (
                f"The {source} batch API, translated onto batchsite under /compat/{name}/: "
                "its own paths, shapes and error bodies (not problem documents). "
                "The native API is described at /api/v1/schema/."
            ),
        },
    )


BrightlocalSchemaGenerator = dialect_schema_generator("brightlocal", "BrightLocal (v4)")
CentrapaySchemaGenerator = dialect_schema_generator("centrapay", "Centrapay")
SigningSchemaGenerator = dialect_schema_generator("signing", "document-signing")
DlcsSchemaGenerator = dialect_schema_generator("dlcs", "DLCS image")

GENERATORS = {
    "brightlocal": BrightlocalSchemaGenerator,
    "centrapay": CentrapaySchemaGenerator,
    "signing": SigningSchemaGenerator,
    "dlcs": DlcsSchemaGenerator,
}


def schema_route(name: str) -> URLPattern:
    """Return the route of dialect `name`'s schema document, readable without a key."""
    view = SpectacularAPIView.as_view(
        generator_class=GENERATORS[name],
        permission_classes=[],
        content_negotiation_class=SchemaNegotiation,
    )
    return path("schema/", view, name="schema")
