# One image for the pipeline services and the Locust master/workers.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV PYTHONUNBUFFERED=1 METRICS_HOST=0.0.0.0 GATEWAY_HOST=0.0.0.0
