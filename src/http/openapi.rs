//! The OpenAPI 3.1 document's frame: what the handlers' `#[utoipa::path]` annotations do not
//! say for themselves. The operations and schemas come from the handlers and the types in
//! `wire.rs` as the router registers them (see `routes` in `mod.rs`); here they get the
//! bearer scheme, the `X-Namespace` header of the runtime routes, and the error responses of
//! the status table in `error.rs`, all in the `{"detail"}` shape.

use utoipa::OpenApi;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, ResponseBuilder, content::ContentBuilder};

use super::error::documented_errors;
use super::wire;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warren",
        description = "Isolated per-tenant files and shells for AI agents: the TroveFiles wire \
                       protocol. Authenticate with `Authorization: Bearer <key>`; runtime calls \
                       (files, exec, snapshots) act on the key's namespace, or on `X-Namespace`.",
    ),
    components(schemas(wire::Detail)),
    tags(
        (name = "files", description = "A namespace's files"),
        (name = "exec", description = "Commands in a sandbox that sees only the namespace"),
        (name = "snapshots", description = "Point-in-time copies in object storage"),
        (name = "keys", description = "API keys (admin)"),
        (name = "auth", description = "Browser login of the CLI: the device-code flow"),
        (name = "namespaces", description = "Namespace lifecycle (admin)"),
        (name = "events", description = "The event feed"),
        (name = "webhooks", description = "Signed event deliveries and the live stream (admin)"),
        (name = "audit", description = "The audit trail (admin)"),
        (name = "operations", description = "Probes, metrics and this document"),
    ),
)]
struct Frame;

/// The document before the routes are added.
pub fn base() -> utoipa::openapi::OpenApi {
    Frame::openapi()
}

/// Tags whose operations act on a namespace (and so take `X-Namespace`).
const RUNTIME_TAGS: [&str; 3] = ["files", "exec", "snapshots"];

/// Completes the collected document.
pub fn finish(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    // OpenAPI has no multi-segment parameter: `{*path}` is documented as `{path}`, whose
    // value may hold slashes.
    let paths = std::mem::take(&mut api.paths.paths);
    api.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();

    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    api.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);

    let namespace: Parameter = ParameterBuilder::new()
        .name("X-Namespace")
        .parameter_in(ParameterIn::Header)
        .description(Some(
            "The namespace to act on; a key locked to a namespace may only name its own",
        ))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String),
        ))
        .build();
    let errors = documented_errors();
    for item in api.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            // Handlers are named within their module (`list` is in several): the tag, which
            // is the module's subject, makes the id unique.
            if let (Some(tag), Some(id)) = (op.tags.iter().flatten().next(), &op.operation_id) {
                op.operation_id = Some(format!("{tag}_{id}"));
            }
            let runtime = op
                .tags
                .iter()
                .flatten()
                .any(|t| RUNTIME_TAGS.contains(&t.as_str()));
            if runtime {
                op.parameters
                    .get_or_insert_with(Vec::new)
                    .push(namespace.clone());
            }
            for (status, description) in &errors {
                op.responses
                    .responses
                    .entry(status.as_u16().to_string())
                    .or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(*description)
                            .content(
                                "application/json",
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("Detail")))
                                    .build(),
                            )
                            .build()
                            .into()
                    });
            }
        }
    }
    api
}
