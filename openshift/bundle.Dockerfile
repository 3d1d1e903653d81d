# OLM bundle image: docker build -f openshift/bundle.Dockerfile -t ghcr.io/helpdesk/helpdesk-operator-bundle:0.1.0 openshift
FROM scratch
LABEL operators.operatorframework.io.bundle.mediatype.v1=registry+v1 \
      operators.operatorframework.io.bundle.manifests.v1=manifests/ \
      operators.operatorframework.io.bundle.metadata.v1=metadata/ \
      operators.operatorframework.io.bundle.package.v1=helpdesk-operator \
      operators.operatorframework.io.bundle.channels.v1=alpha \
      operators.operatorframework.io.bundle.channel.default.v1=alpha \
      com.redhat.openshift.versions=v4.14
COPY bundle/manifests /manifests/
COPY bundle/metadata /metadata/
