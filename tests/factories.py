"""factory_boy factories: rows made directly, for setting up a test (the services are what tests exercise)."""

import factory
from oauth2_provider.models import get_application_model

from governance.models import Agent, Capability, Grant, Organization, Role, ToolServer, User
from governance.models.agents import AgentKind, AgentStatus


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    role = Role.MEMBER
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery staple")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class AdminFactory(UserFactory):
    role = Role.ADMIN
    is_staff = True


class ToolServerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ToolServer

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Tool server {n}")
    audience = factory.Sequence(lambda n: f"https://tools{n}.example.test/mcp")


class CapabilityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Capability

    tool_server = factory.SubFactory(ToolServerFactory)
    key = factory.Sequence(lambda n: f"records.action_{n}")


class ApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_application_model()

    name = factory.Sequence(lambda n: f"app {n}")
    client_type = "confidential"
    authorization_grant_type = "authorization-code"
    redirect_uris = "https://agent.example.test/callback"


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    owner = factory.SubFactory(UserFactory, organization=factory.SelfAttribute("..organization"))
    name = factory.Sequence(lambda n: f"agent-{n}")
    kind = AgentKind.INTERACTIVE
    status = AgentStatus.ACTIVE
    application = factory.SubFactory(
        ApplicationFactory,
        user=factory.SelfAttribute("..owner"),
        authorization_grant_type=factory.LazyAttribute(
            lambda a: (
                "client-credentials"
                if a.factory_parent.kind == AgentKind.BACKGROUND
                else "authorization-code"
            )
        ),
    )

    @factory.post_generation
    def ceiling(obj, create, extracted, **kwargs):  # noqa: N805
        if create and extracted:
            obj.ceiling.set(extracted)


class GrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Grant

    agent = factory.SubFactory(AgentFactory)
    organization = factory.SelfAttribute("agent.organization")
    capability = factory.SubFactory(CapabilityFactory)
    user = factory.SubFactory(UserFactory, organization=factory.SelfAttribute("..agent.organization"))
