//! HorizontalPodAutoscalers and PodDisruptionBudgets.

use super::*;

pub(in crate::build) fn autoscalers_and_budgets(input: &BuildInput, out: &mut Vec<Child>) {
    let s = &input.platform.spec;
    for c in Component::ALL {
        if input.deploy_version(c).is_none() {
            continue;
        }
        let spec = s.services.get(c);
        let name = names::service_name(input.name(), c);
        if let Some(a) = &spec.autoscaling {
            let hpa = HorizontalPodAutoscaler {
                metadata: input.meta(&name, c.as_str()),
                spec: HorizontalPodAutoscalerSpec {
                    scale_target_ref: CrossVersionObjectReference {
                        api_version: Some("apps/v1".into()),
                        kind: "Deployment".into(),
                        name: name.clone(),
                    },
                    min_replicas: Some(a.min_replicas),
                    max_replicas: a.max_replicas,
                    metrics: Some(vec![MetricSpec {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricSource {
                            name: "cpu".into(),
                            target: MetricTarget {
                                type_: "Utilization".into(),
                                average_utilization: Some(a.target_cpu_utilization_percentage),
                                ..Default::default()
                            },
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                ..Default::default()
            };
            out.push(child(Kind::HorizontalPodAutoscaler, &hpa));
        }
        let min = spec
            .autoscaling
            .as_ref()
            .map_or(spec.replicas, |a| a.min_replicas);
        if s.pod_disruption_budgets && min > 1 {
            out.push(child(
                Kind::PodDisruptionBudget,
                &pdb(input, &name, c.as_str()),
            ));
        }
    }
    if let Some(f) = &s.frontend
        && s.pod_disruption_budgets
        && f.replicas > 1
    {
        let name = names::frontend_name(input.name());
        out.push(child(
            Kind::PodDisruptionBudget,
            &pdb(input, &name, "frontend"),
        ));
    }
}

pub(in crate::build) fn pdb(
    input: &BuildInput,
    name: &str,
    component: &str,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: input.meta(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(input.name(), component)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
