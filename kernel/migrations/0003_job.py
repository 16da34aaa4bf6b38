"""Jobs, once the catalog's, are the kernel's: the model moves here with its tables, which keep
their names (`catalog_job`, `catalog_jobfile`) and their rows, indexes and row-level security
(catalog/migrations/0005_job_moved_to_the_kernel.py drops the catalog's state of them). `kind`
loses its choices (the features register their kinds) and a job gains `result`."""

import django.db.models.deletion
import uuid
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0002_outbox_trace_context'),
        ('catalog', '0004_product_count'),
        ('tenants', '0011_retention_per_tenant'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Job',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('kind', models.CharField(max_length=50)),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='pending', max_length=20)),
                        ('total', models.PositiveIntegerField(default=0)),
                        ('processed', models.PositiveIntegerField(default=0)),
                        ('succeeded', models.PositiveIntegerField(default=0)),
                        ('failed', models.PositiveIntegerField(default=0)),
                        ('errors', models.JSONField(blank=True, default=list)),
                        ('errors_omitted', models.PositiveIntegerField(default=0)),
                        ('detail', models.TextField(blank=True, default='')),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('created_by_user_id', models.UUIDField(blank=True, null=True)),
                        ('created_by_api_key_id', models.UUIDField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('tenant', models.ForeignKey(editable=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'catalog_job',
                        'ordering': ['-created_at', 'id'],
                        'abstract': False,
                        'base_manager_name': 'objects',
                        'indexes': [models.Index(fields=['tenant', 'created_at', 'id'], name='job_created_idx')],
                    },
                ),
                migrations.CreateModel(
                    name='JobFile',
                    fields=[
                        ('job', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='core.job')),
                        ('name', models.CharField(blank=True, default='', max_length=255)),
                        ('format', models.CharField(max_length=10)),
                        ('content', models.BinaryField()),
                        ('tenant', models.ForeignKey(editable=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'catalog_jobfile',
                        'abstract': False,
                        'base_manager_name': 'objects',
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AddField(
            model_name='job',
            name='result',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
