# The vmmigration operator image (what charts/vmmigration-operator runs).
#
#   docker build -t vmmigration/operator:0.1.0 .
#
# libvirt-python has no wheels, so it is compiled against libvirt-dev in a
# build stage; the runtime stage carries only the libvirt client library,
# an SSH client (for qemu+ssh:// URIs) and the virtualenv. It runs as a
# non-root user with a read-only root filesystem (the chart mounts /tmp and
# the credentials directory as emptyDirs).
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/vmmigration
COPY pyproject.toml README.md /src/
COPY operator /src/operator
RUN /opt/vmmigration/bin/pip install --no-cache-dir /src

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 openssh-client \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/vmmigration /opt/vmmigration
ENV PATH=/opt/vmmigration/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8000 8080
ENTRYPOINT ["vmmigration"]
CMD ["operator"]
