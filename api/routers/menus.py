from api.routers.crud import crud_router
from core.models import Menu
from core.schemas import MenuIn, MenuUpdate

router = crud_router(Menu, MenuIn, MenuUpdate, "menus")
