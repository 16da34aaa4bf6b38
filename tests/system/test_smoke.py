def test_healthz_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
