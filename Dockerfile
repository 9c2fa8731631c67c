# The vmmigration operator image (what charts/vmmigration-operator runs).
#
#   docker build -t vmmigration/operator:0.1.0 .
#
# BASE is any Debian bookworm image with Python 3.11: the official python
# image by default, or one made from Debian's own packages, as
# scripts/build-image does where no registry can be reached. Behind an
# HTTPS-intercepting proxy, give pip the proxy's CA bundle as a secret:
#
#   docker build --secret id=pipcert,src=/etc/ssl/certs/ca-certificates.crt .
#
# libvirt-python has no wheels, so it is compiled against libvirt-dev in a
# build stage; the runtime stage carries only the libvirt client library,
# an SSH client (for qemu+ssh:// URIs) and the virtualenv. It runs as a
# non-root user with a read-only root filesystem (the chart mounts /tmp and
# the credentials directory as emptyDirs).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# Debian's own python3 (in /usr/bin) comes without venv and C headers; the
# python image (in /usr/local/bin) has both.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libvirt-dev \
 && if [ "$(command -v python3)" = /usr/bin/python3 ]; then \
      apt-get install -y --no-install-recommends python3-dev python3-venv; \
    fi \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/vmmigration
# The dependencies first, read from pyproject.toml alone, so that a change to
# the code or the README reuses this layer instead of compiling libvirt-python
# again.
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pipcert \
    if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi \
 && python3 -c 'import tomllib; print(*tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
      > /tmp/requirements.txt \
 && /opt/vmmigration/bin/pip install --no-cache-dir -r /tmp/requirements.txt
COPY README.md /src/
COPY operator/vmmigration /src/operator/vmmigration
# pip still fetches the build backend (setuptools), hence the secret again.
# Then pip goes: the operator installs nothing at run time.
RUN --mount=type=secret,id=pipcert \
    if [ -s /run/secrets/pipcert ]; then export PIP_CERT=/run/secrets/pipcert; fi \
 && /opt/vmmigration/bin/pip install --no-cache-dir --no-deps /src \
 && /opt/vmmigration/bin/python3 -m pip uninstall -q -y setuptools pip

FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 openssh-client \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log
COPY --from=build /opt/vmmigration /opt/vmmigration
ENV PATH=/opt/vmmigration/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 8000 8080
ENTRYPOINT ["vmmigration"]
CMD ["operator"]
