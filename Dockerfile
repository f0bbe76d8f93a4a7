# The operator image the Helm chart runs (`image.repository`/`image.tag`).
# Build: docker build -t ghcr.io/kubeforge/kubeforge:0.1.0 .
# Not built in this repository's CI: its machines have no container engine.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# The chart runs it as uid 65532 with a read-only root filesystem; nothing here needs to write.
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 8081
ENTRYPOINT ["kubeforge"]
CMD ["run", "--in-cluster"]
